"""One module per `keras-vessel` command."""
