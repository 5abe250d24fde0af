"""Camera geometry: calibrated camera rigs, projection, undistortion and triangulation."""
