"""HTTP edge only: decode the request, call the core, encode the response."""
