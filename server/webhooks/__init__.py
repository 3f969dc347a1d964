"""Webhooks: a run's end posted to the URL its session (or agent) names, signed per the
Standard Webhooks spec, from the durable outbox the store writes with the run's end.

`signing.py` makes endpoint secrets and signs; `urls.py` says which URLs may be posted to;
`sender.py` is the delivery loop, the one user of an HTTP client outside providers/ and the
face."""
