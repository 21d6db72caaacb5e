"""The chaos soak (issue 10): `bench/chaos.py` drives it, `verify.py` judges it."""
