"""Outgoing webhooks: endpoints, the outbox (written by the changes' own transactions: the
triggers of the webhooks migration and mailer/optouts), and the dispatcher that signs and
delivers it per the Standard Webhooks spec."""
