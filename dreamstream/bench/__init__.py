"""Load generation and measurement for `dreamstream bench` and the stream worker's end-to-end tests."""
