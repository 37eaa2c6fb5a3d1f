"""Kill storms: shmring's Queue, Channel and Topic under a rain of SIGKILLs.

A supervisor (:mod:`.storm`) runs producers and consumers as processes
forked from itself, SIGKILLs one of them at random every few milliseconds
and forks its replacement.  Every participant logs what it does, one
write(2) per event, to a file of its own (:mod:`.logformat`): a write that
returned survives the kill of its process.  At the end the supervisor
drains the object, and the checker (:mod:`.checker`) proves from the logs
alone that every item a returned put/send committed was delivered exactly
once, intact, in order, or explains its loss by a consumer killed between
its get's return and its log line.  docs/RELIABILITY.md ("Kill storms")
states the promise per kind and how to run it: ``make chaos``.
"""
