"""The synthetic rig: a deterministic multi-camera mouse arena with ground truth.

It is the demo's input and the benchmarks' referee (see DESIGN.md section 4).
"""
