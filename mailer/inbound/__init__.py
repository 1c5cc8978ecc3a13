"""Inbound mail (issue 16): bounces, complaints and mailto unsubscribes that come back
after the relay accepted our messages, and the reputation guard that pauses a campaign
whose bounce or complaint rate would hurt the sender."""
