"""The device side: the session protocol (protocol), sessions and scenarios (session),
data streaming (stream), builds (build), QEMU (qemu), jobs for the runner firmware
(job, runner) and training beside numpy (train)."""
