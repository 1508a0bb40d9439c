"""One module per upstream library: how to build its model at a size, load weights strictly, and its configs."""
