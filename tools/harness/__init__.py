"""What tests and tools both drive: the gateway as a subprocess, test cameras, a WebRTC viewer.

Why here: the benchmarks under tools/ start the same gateway and cameras the tests do; tests import
this package, tools never import tests. It is not part of the installed wheel.
"""
