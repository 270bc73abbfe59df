"""reconcile: change a running lab in place into what its file now says.

diff.py compares the plan the lab was built with (recorded in its state) with the plan of
the file now, op by op, and says what to take away, change and make — and what the
kernel takes away by itself with it (a link's addresses and routes, a namespace's every
object), which must be made again. It is pure: `up --dry-run` prints it.
run.py applies it through the kernel driver, stage by stage; if a step fails or a signal
arrives, it puts the lab back as it was, by reconciling what is there now back into the
plan the lab was built with.
"""
