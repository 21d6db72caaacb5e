"""The chaos soak (issue 10): `bench/chaos.py` drives it; these modules are its parts."""
