"""Independent implementations the project is checked against: written from a paper or a
script's description (``jacobgil``) or built on peer libraries (``metrics``: Quantus, TorchRay).
Used by the parity tests and by the benchmarks that measure the same agreement at scale."""
