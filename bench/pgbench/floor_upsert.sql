-- h. floor: the plain SQL upsert of the same batch, INSERT ... SELECT FROM jsonb_populate_recordset ...
-- ON CONFLICT DO UPDATE, which writes every row it meets.
INSERT INTO bench_h.plain AS t (id, title, description, channel_id, published_at, duration_s, view_count, like_count,
    comment_count, favorite_count, category_id, language, privacy, license, embeddable, made_for_kids, tags, thumbnail,
    rating, updated_at)
SELECT r.id, r.title, r.description, r.channel_id, r.published_at, r.duration_s, r.view_count, r.like_count,
    r.comment_count, r.favorite_count, r.category_id, r.language, r.privacy, r.license, r.embeddable, r.made_for_kids,
    r.tags, r.thumbnail, r.rating, now()
FROM jsonb_populate_recordset(NULL::bench_h.plain,
    (SELECT rows FROM bench_h.batches WHERE kind = :kind AND n = (SELECT nextval(:seq)))) AS r
ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
    channel_id = excluded.channel_id, published_at = excluded.published_at, duration_s = excluded.duration_s,
    view_count = excluded.view_count, like_count = excluded.like_count, comment_count = excluded.comment_count,
    favorite_count = excluded.favorite_count, category_id = excluded.category_id, language = excluded.language,
    privacy = excluded.privacy, license = excluded.license, embeddable = excluded.embeddable,
    made_for_kids = excluded.made_for_kids, tags = excluded.tags, thumbnail = excluded.thumbnail,
    rating = excluded.rating, updated_at = now();
