"""REST endpoints, one module per chapter of the H5Stream manual."""
