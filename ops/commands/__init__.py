"""Families of `stoker` commands; each module has `register(group)`."""
