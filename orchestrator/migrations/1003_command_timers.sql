-- A step command's timeout is a timer too, so a step fails on the orchestrator's own clock
-- even when no agent ever reads its command.
ALTER TABLE mindbus_run_timers DROP CONSTRAINT mindbus_run_timers_kind_check;
ALTER TABLE mindbus_run_timers ADD CONSTRAINT mindbus_run_timers_kind_check
    CHECK (kind IN ('deadline', 'approval', 'command'));
