"""Models shared by every SàT frontend, fed by the bridge's signals (no UI toolkit here).

- :mod:`.host`: :class:`~.host.QuickApp`, the frontend's view of the daemon: profiles in use,
  their contact lists, conversations, notifications and long jobs; it listens to the bridge
  signals, keeps the models up to date and tells the UI what changed through
  :class:`~.events.Events`.
- :mod:`.contact_list`, :mod:`.chat`, :mod:`.notifications`, :mod:`.progress`: the models.
- :mod:`.features`: which optional bridge members (MUC, corrections, blocking...) the daemon
  offers, under the names plugins gave them; a missing one raises :class:`~.features.MissingFeature`
  with a sentence a user can read.
- :mod:`.commands`, :mod:`.completion`, :mod:`.input_history`: IRC-like commands, tab
  completion and input history, for any text frontend.
- :mod:`.nick_colours` (XEP-0392) and :mod:`.styling` (XEP-0393 spans).
- :mod:`.testing`: a scriptable fake bridge for tests and benchmarks.

Nothing here imports ``sat`` (the backend): frontends talk to it only through a bridge client
(:mod:`sat_frontends.bridge`).
"""
