-- Nothing to PUBLIC; each role its functions. Helpers stay with their owner.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA video FROM PUBLIC;
GRANT SELECT ON video.job_summary, video.job_status_realtime, video.active_jobs, video.daily_job_stats,
    video.storage_performance TO video_client, video_service;
GRANT SELECT ON video.system_metrics TO video_service;
-- The row-level security policies call request_client_ip as the reading role; the reads, which run as
-- their caller, check their arguments with require and check_arg (pure functions).
GRANT EXECUTE ON FUNCTION video.request_client_ip(), video.require(anyelement, text), video.check_arg(boolean, text)
TO video_client, video_service;
GRANT EXECUTE ON FUNCTION
    video.create_job(text, integer, integer, numeric, inet, text, text, jsonb, jsonb),
    video.update_job_status(uuid, text, text, text, text, bigint, numeric, text),
    video.add_job_element(uuid, text, text, integer, integer, text, text, text, text, text, numeric, numeric),
    video.get_job_with_details(uuid),
    video.list_jobs(text[], integer, integer, text, inet, timestamptz, timestamptz),
    video.find_jobs_by_client_ip(inet, integer),
    video.find_jobs_by_date_range(timestamptz, timestamptz, integer),
    video.find_active_jobs(integer)
TO video_client, video_service;
GRANT EXECUTE ON FUNCTION
    video.update_element_status(uuid, boolean, boolean, text, bigint, text, text),
    video.start_processing_step(uuid, text, integer, jsonb, text),
    video.complete_processing_step(uuid, boolean, numeric, jsonb, numeric, bigint, text, text),
    video.log_storage_operation(uuid, text, text, text, text, boolean, bigint, integer, text, jsonb),
    video.update_job_progress(uuid, numeric, text, text),
    video.log_url_access(uuid, text, inet, text, integer, integer),
    video.get_system_stats(),
    video.get_processing_metrics(timestamptz, timestamptz),
    video.health_check()
TO video_service;
