-- Each function: valid, invalid and edge inputs (run as the installing role, a superuser: scope admin).
BEGIN;
SELECT plan(67);

-- create_job
SELECT video.create_job('mp4', 1920, 1080, 45, '192.168.1.100', 'Mozilla/5.0', p_request => '{"title": "intro"}',
    p_elements => '[{"type": "video", "source_url": "https://example.com/video.mp4", "x_position": "10%", "y_position": "10%",
                     "width": "80%", "height": "80%", "fit_mode": "contain"},
                    {"type": "audio", "source_url": "https://example.com/a.mp3", "element_order": 5, "track": 1}]') AS created \gset
SELECT (:'created'::jsonb ->> 'job_id')::uuid AS job \gset
SELECT is(:'created'::jsonb - 'job_id' - 'queue_job_id', '{"created": true, "status": "pending", "elements": 2, "client_ip": "192.168.1.100"}',
          'create_job: created, pending, two elements, the client IP');
SELECT results_eq($$SELECT status, output_format, width, height, estimated_duration, progress, version, attempts, response_type FROM video.jobs WHERE id = '$$ || :'job' || $$'$$,
                  $$VALUES ('pending'::text, 'mp4'::text, 1920, 1080, 45.000::numeric(10,3), 0.00::numeric(5,2), 1::bigint, 0, 'async'::text)$$, 'create_job: the row');
SELECT is((SELECT array_agg(element_order || ':' || type || ':' || track ORDER BY element_order) FROM video.elements WHERE job_id = :'job'),
          '{0:video:0,5:audio:1}', 'create_job: elements in their order (the index when element_order is absent)');
SELECT is(conveyor.get_job((:'created'::jsonb ->> 'queue_job_id')::uuid) - '{job_id,run_at,created_at,state,percent,step,worker_id,started_at,lease_until,last_error,finished_at,reason,details,resolved_at,resolution,resolved_by}'::text[],
          jsonb_build_object('queue', 'video', 'status', 'pending', 'job_type', 'RENDER_VIDEO', 'group_key', null, 'dedup_key', 'render:' || :'job',
                             'payload', jsonb_build_object('video_job_id', :'job'), 'priority', 5, 'attempt', 0, 'max_attempts', 3),
          'create_job: its RENDER_VIDEO job in conveyor''s queue');
SELECT video.create_job(p_response_type => 'sync') AS sync \gset
SELECT is((conveyor.get_job((:'sync'::jsonb ->> 'queue_job_id')::uuid) ->> 'priority')::int, 8, 'create_job: a sync request renders at priority 8');
SELECT is(video.update_job_status((:'sync'::jsonb ->> 'job_id')::uuid, 'cancelled') ->> 'status', 'cancelled', 'update_job_status: pending -> cancelled');
SELECT is(conveyor.get_job((:'sync'::jsonb ->> 'queue_job_id')::uuid) ->> 'status', 'cancelled', 'update_job_status: cancelled cancels the render job');
SELECT throws_ok($$SELECT video.create_job('avi')$$, '22023', 'p_output_format ''avi'' must be mp4, webm, mov or gif', 'create_job: unknown format');
SELECT throws_ok($$SELECT video.create_job('mp4', 1919)$$, '22023', NULL, 'create_job: odd width');
SELECT throws_ok($$SELECT video.create_job('mp4', 1920, 8000)$$, '22023', NULL, 'create_job: height over 4320');
SELECT throws_ok($$SELECT video.create_job('mp4', NULL)$$, '22004', 'p_width must not be NULL', 'create_job: NULL width');
SELECT throws_ok($$SELECT video.create_job(p_estimated_duration => 0)$$, '22023', NULL, 'create_job: zero estimated duration');
SELECT throws_ok($$SELECT video.create_job(p_response_type => 'later')$$, '22023', NULL, 'create_job: unknown response type');
SELECT throws_ok($$SELECT video.create_job(p_request => '[1]')$$, '22023', NULL, 'create_job: a request that is not an object');
SELECT throws_ok($$SELECT video.create_job(p_elements => '[{"type": "video", "source_url": "https://e.com/a.mp4"}, {"type": "gif", "source_url": "https://e.com/b"}]')$$,
                 '22023', 'p_elements[1].type ''gif'' must be video, image or audio', 'create_job: a bad element is named by its index');
SELECT throws_ok($$SELECT video.create_job(p_elements => '[{"type": "video", "source_url": "ftp://e.com/a"}]')$$, '22023', NULL, 'create_job: a non-http source');
SELECT throws_ok($$SELECT video.create_job(p_elements => '[{"type": "video", "source_url": "https://e.com/a", "speed": 2}]')$$, '22023', NULL, 'create_job: unknown element field');
SELECT throws_ok($$SELECT video.create_job(p_elements => '[{"type": "video", "source_url": "https://e.com/a", "element_order": 1}, {"type": "image", "source_url": "https://e.com/b", "element_order": 1}]')$$,
                 '23505', NULL, 'create_job: two elements with one element_order');
SELECT is((SELECT count(*) FROM video.jobs), 2::bigint, 'create_job: refused calls wrote nothing');

-- add_job_element
SELECT ok(video.add_job_element(:'job', 'image', 'https://example.com/logo.png', 1, 2, '90%', '5%', '120px', '120px', 'none') IS NOT NULL, 'add_job_element: an element id');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 1)$$, :'job'), '23505', NULL, 'add_job_element: element_order taken');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 2, p_fit_mode => 'stretch')$$, :'job'), '22023', NULL, 'add_job_element: unknown fit_mode');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 2, p_x_position => 'left')$$, :'job'), '22023', NULL, 'add_job_element: a position that is not a number, % or px');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 2, p_width => '-5%%')$$, :'job'), '22023', NULL, 'add_job_element: a negative width');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 1000)$$, :'job'), '22023', NULL, 'add_job_element: element_order over 999');
SELECT throws_ok($$SELECT video.add_job_element(gen_random_uuid(), 'image', 'https://example.com/x.png')$$, '42704', NULL, 'add_job_element: an unknown job');

-- the job starts; a worker holds its render job
SELECT job_id AS render FROM conveyor.dequeue('video', 'w1') \gset
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'processing', p_worker_id => 'w2')$$, :'job'), '55000', NULL,
                 'update_job_status: a worker that does not hold the render job changes nothing');
SELECT is(video.update_job_status(:'job', 'processing', p_worker_id => 'w1') - 'updated_at' - 'job_id', '{"status": "processing", "version": 2, "attempts": 1}',
          'update_job_status: pending -> processing by the worker holding the render job');
SELECT ok(EXISTS (SELECT FROM conveyor.job_events(:'render') WHERE event = 'log:status.processing'), 'update_job_status: the change is in the render job''s trail');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://example.com/x.png', 9)$$, :'job'), '55000', NULL, 'add_job_element: not once processing');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'failed')$$, :'job'), '22004', NULL, 'update_job_status: failed needs an error code');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'uploading', p_result_url => 'https://x.com/a.mp4')$$, :'job'), '22023', NULL, 'update_job_status: a result only with completed');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'failed', 'x', 'lower case')$$, :'job'), '22023', NULL, 'update_job_status: an error code of upper-case letters');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'done')$$, :'job'), '22023', NULL, 'update_job_status: an unknown status');
SELECT throws_ok($$SELECT video.update_job_status(gen_random_uuid(), 'processing')$$, '42704', NULL, 'update_job_status: an unknown job');

-- elements
SELECT id AS el FROM video.elements WHERE job_id = :'job' AND element_order = 0 \gset
SELECT throws_ok(format($$SELECT video.update_element_status(%L)$$, :'el'), '22023', NULL, 'update_element_status: nothing to update');
SELECT throws_ok(format($$SELECT video.update_element_status(%L, p_processed => true)$$, :'el'), '22023', 'an element must be downloaded to be processed',
                 'update_element_status: processed before downloaded');
SELECT throws_ok(format($$SELECT video.update_element_status(%L, p_local_path => 'tmp/x')$$, :'el'), '22023', NULL, 'update_element_status: a relative path');
SELECT is(video.update_element_status(:'el', true, true, '/tmp/video.mp4', 10485760) - 'element_id' - 'job_id',
          '{"downloaded": true, "processed": true, "local_path": "/tmp/video.mp4", "source_size": 10485760}', 'update_element_status: downloaded and processed');
SELECT throws_ok(format($$SELECT video.update_element_status(%L, p_downloaded => false)$$, :'el'), '22023', NULL, 'update_element_status: a processed element stays downloaded');
SELECT throws_ok($$SELECT video.update_element_status(gen_random_uuid(), true)$$, '42704', NULL, 'update_element_status: an unknown element');

-- timeline
SELECT throws_ok(format($$SELECT video.start_processing_step(%L, 'render')$$, :'job'), '22023', NULL, 'start_processing_step: an unknown step');
SELECT throws_ok(format($$SELECT video.start_processing_step(%L, 'download', -1)$$, :'job'), '22023', NULL, 'start_processing_step: a negative order');
SELECT video.start_processing_step(:'job', 'download', 0, '{"source_count": 3}', 'w1') AS step \gset
SELECT is((SELECT current_step FROM video.jobs WHERE id = :'job'), 'download', 'start_processing_step: the job''s current step');
SELECT throws_ok(format($$SELECT video.start_processing_step(%L, 'download', 0)$$, :'job'), '55000', NULL, 'start_processing_step: the step is already running');
SELECT throws_ok(format($$SELECT video.complete_processing_step(%L, false)$$, :'step'), '22023', NULL, 'complete_processing_step: a failure needs its message');
SELECT throws_ok(format($$SELECT video.complete_processing_step(%L, true, 101)$$, :'step'), '22023', NULL, 'complete_processing_step: progress over 100');
SELECT is(video.complete_processing_step(:'step', true, 75, '{"files_processed": 3}', 45.2, 1073741824, p_worker_id => 'w1') - 'timeline_id' - 'job_id' - 'duration_ms',
          '{"step": "download", "status": "completed", "progress_percentage": 75.00}', 'complete_processing_step: completed at 75%');
SELECT results_eq(format($$SELECT details, cpu_usage, memory_usage, progress FROM video.processing_timeline t JOIN video.jobs j ON j.id = t.job_id WHERE t.id = %L$$, :'step'),
                  $$VALUES ('{"source_count": 3, "files_processed": 3}'::jsonb, 45.20::numeric(7,2), 1073741824::bigint, 75.00::numeric(5,2))$$,
                  'complete_processing_step: details merged, metrics kept, the job at 75%');
SELECT throws_ok(format($$SELECT video.complete_processing_step(%L)$$, :'step'), '55000', NULL, 'complete_processing_step: a step ends once');
SELECT throws_ok($$SELECT video.complete_processing_step(gen_random_uuid())$$, '42704', NULL, 'complete_processing_step: an unknown step');

-- progress
SELECT throws_ok(format($$SELECT video.update_job_progress(%L, 100.5)$$, :'job'), '22023', NULL, 'update_job_progress: over 100');
SELECT throws_ok(format($$SELECT video.update_job_progress(%L, 50, 'rendering')$$, :'job'), '22023', NULL, 'update_job_progress: an unknown step');
SELECT is(video.update_job_progress(:'job', 80, 'encoding', 'w1') - 'job_id' - 'version', '{"status": "processing", "progress": 80.00, "current_step": "encoding"}',
          'update_job_progress: 80%, encoding');
SELECT results_eq(format($$SELECT percent, step FROM conveyor.list_jobs('video', status => '{running}') WHERE job_id = %L$$, :'render'),
                  $$VALUES (80::numeric, 'encoding'::text)$$, 'update_job_progress: conveyor''s render job shows it too');
SELECT throws_ok(format($$SELECT video.update_job_progress(%L, 90, NULL, 'w9')$$, :'job'), '55000', NULL, 'update_job_progress: fenced by the worker id');

-- storage
SELECT ok(video.log_storage_operation(:'job', 'upload', 'my-video-bucket', 'videos/2024/01/15/video.mp4', 'us-east-1', true, 52428800, 3500,
          NULL, '{"content_type": "video/mp4"}') > 0, 'log_storage_operation: an id');
SELECT is((SELECT count(*) FROM video.system_metrics WHERE metric_name = 'video.storage.duration_ms' AND metric_value = 3500
           AND tags = '{"operation": "upload", "success": true}'), 1::bigint, 'log_storage_operation: its duration is a metric point');
SELECT throws_ok(format($$SELECT video.log_storage_operation(%L, 'upload', 'My_Bucket', 'k')$$, :'job'), '22023', NULL, 'log_storage_operation: a bad bucket name');
SELECT throws_ok(format($$SELECT video.log_storage_operation(%L, 'upload', 'bucket', 'k', 'mars')$$, :'job'), '22023', NULL, 'log_storage_operation: a bad region');
SELECT throws_ok(format($$SELECT video.log_storage_operation(%L, 'move', 'bucket', 'k')$$, :'job'), '22023', NULL, 'log_storage_operation: an unknown operation');
SELECT throws_ok($$SELECT video.log_storage_operation(gen_random_uuid(), 'upload', 'bucket', 'k')$$, '42704', NULL, 'log_storage_operation: an unknown job');

-- a failed attempt: running steps are closed when the next one starts; the final status ends the render job
SELECT video.start_processing_step(:'job', 'upload', 4) IS NOT NULL AS started \gset
SELECT ok(video.update_job_status(:'job', 'pending', 'S3 503', 'UPLOAD_FAILED') ->> 'status' = 'pending', 'processing -> pending: retried');
SELECT is(video.update_job_status(:'job', 'processing') ->> 'attempts', '2', 'the second attempt');
SELECT is((SELECT status || ':' || error_message FROM video.processing_timeline WHERE job_id = :'job' AND step = 'upload'),
          'failed:the attempt ended before the step did', 'the first attempt''s running step was closed as failed');
SELECT is(video.update_job_status(:'job', 'failed', 'unsupported codec', 'CODEC') ->> 'status', 'failed', 'processing -> failed');
SELECT is((SELECT j ->> 'status' || ':' || (j ->> 'reason') FROM conveyor.get_job(:'render') j), 'dead:CODEC: unsupported codec',
          'failed dead-letters the render job with the error code and message');

SELECT * FROM finish();
ROLLBACK;
