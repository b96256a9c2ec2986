"""The `keras-vessel` command line: a thin click shell over `keras_vessel`."""
