"""Serve the browser demo (web/) with a bundle on 127.0.0.1, or write it as a static folder.

  ditweb serve [BUNDLE] [--port P]   web/ at /, the bundle at /bundle/
  ditweb site BUNDLE OUT_DIR         the same layout as plain files for any static host
"""
