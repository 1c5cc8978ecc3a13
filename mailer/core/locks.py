"""Advisory lock keys that more than one role package takes.

`CONTACT_CREATION` ("import" in ASCII): a contact import holds it exclusively for its whole
transaction, because it tells the contacts it created by their ids (every id above the
sequence's value when it began is its own). Every other writer that may create a contact (a
walk-in recipient of the transactional lane, a confirmed sign-up) takes the shared form
first: such writers never wait for each other, only for a running import, and an import never
finds a contact it did not create above its floor.
"""

from __future__ import annotations

CONTACT_CREATION = 0x696D706F7274
