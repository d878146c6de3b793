"""The Faust application, topics, codecs and command-line interface."""
