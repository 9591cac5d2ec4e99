"""The program's ComponentResources, one per module; none reads config (__main__.py passes values in)."""
