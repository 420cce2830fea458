# Type stub for the Rust extension nncift._core. Keep in sync with rust/nncift-py/src.

__version__: str

class NnciftError(Exception): ...
