"""The `ditweb` command: the shell on top of every layer (docs/bundle-format.md, "Layers").

ditformat (numpy) <- dit_model (torch) <- wgsl <- export, runtime_py <- webserve <- bench <- ditweb.
Nothing below imports this package; tests/test_layers.py checks every arrow points down."""
