"""Reading and writing images, tables and experiment layouts."""
