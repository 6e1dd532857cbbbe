"""The data plane of h5gate: everything that touches media bytes."""
