"""The operator HTTP API: JSON under /api/v1, hashed keys with scopes, an OpenAPI contract.

Every route calls the same role functions as the `mailer` CLI; every write is logged in
the operator log (mailer/compliance) in the transaction of the write."""
