"""Events that leave the box: e-mail alerts (email.py)."""
