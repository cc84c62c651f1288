"""Request and response bodies of the REST API: msgspec Structs, so /schema is exact."""
