-- h. conveyor.upsert_counts of the next 1,000-row batch of kind :kind (bench_h.batches, in the order of sequence :seq).
SELECT inserted, updated, unchanged FROM conveyor.upsert_counts('bench_h.conv',
    (SELECT rows FROM bench_h.batches WHERE kind = :kind AND n = (SELECT pg_catalog.nextval(:seq))),
    '{id}', '{"touch_columns": ["updated_at"]}');
