"""Reading and writing: video, calibration, tables and foreign pose formats."""
