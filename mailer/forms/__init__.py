"""Consent intake: sign-up forms with versioned consent texts and double opt-in (issue 17).

model (values), store + forms.sql (Postgres), signup (the two steps every door calls),
abuse (rate limits, honeypot, proof-of-work), confirmation (the mail, through the
transactional lane), embed (the snippet for other sites), wording (the words, en and fr).
"""
