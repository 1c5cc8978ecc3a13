"""The tracking server: open pixel, click redirects, unsubscribe and preference centre."""
