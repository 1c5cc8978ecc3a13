"""Opt-outs, one operation for every door: the tracker's pages and one-click POST, and the
inbound mailto unsubscribe and complaint (mailer/inbound). Its store runs optouts.sql on a
connection the caller's transaction holds, so an opt-out commits with whatever it reports."""
