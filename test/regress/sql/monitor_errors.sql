-- The monitor's messages, as users see them: settings, events, worker issues, metrics.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT conveyor.get_setting('health.nope');
SELECT conveyor.set_setting('retention.events_days', 'a week');
SELECT conveyor.set_setting('retention.events_days', '0');
SELECT conveyor.set_setting('health.budget_ratio_warning', '2');
SELECT conveyor.set_setting('audit.worker_calls', 'yes');
SELECT conveyor.set_setting(NULL, 'on');
SELECT * FROM conveyor.events(lim => 0);
SELECT * FROM conveyor.events(since => NULL);
SELECT * FROM conveyor.events('-infinity');
SELECT conveyor.report_issue('w1', 'http', 'urgent', 'HTTP 500');
SELECT conveyor.report_issue('w1', NULL, 'error', 'HTTP 500');
SELECT conveyor.report_issue('w1', 'http', 'error', '');
SELECT conveyor.report_issue(repeat('w', 1025), 'http', 'error', 'HTTP 500');
SELECT conveyor.resolve_issue(12345, 'done');
SELECT conveyor.resolve_issue(NULL, 'done');
SELECT conveyor.record_metric('api_ms', 'Infinity');
SELECT conveyor.record_metric('api_ms', 1, '"yt"');
SELECT conveyor.record_metric(NULL, 1);
SELECT conveyor.record_metrics('{"name": "x"}');
SELECT conveyor.record_metrics('[{"name": "x", "value": 1}, {"value": 2}]');
SELECT conveyor.record_metrics('[{"name": "x", "value": 1}, {"name": "y"}]');
SELECT conveyor.record_metrics('[{"name": 5, "value": 1}]');
SELECT conveyor.record_metrics('[{"name": "x", "value": 1, "tags": [1]}]');
SELECT conveyor.record_metrics('[{"name": "x", "value": 1e400}]');
SELECT conveyor.aggregate_metrics('minute');
SELECT * FROM conveyor.metrics('api_ms', now(), now(), 'month');
SELECT * FROM conveyor.metrics('api_ms', NULL, now());
