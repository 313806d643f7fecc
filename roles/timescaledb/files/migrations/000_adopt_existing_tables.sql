-- 000: adopt tables that exist before the project's schema (the live server's osrs_data,
-- created by the old compose stack: items.id, items."limit", osrs_news.pub_date/created_at,
-- player_counts.count). Runs before 001, whose CREATE TABLE IF NOT EXISTS then leaves them
-- as they are. On an empty database, or one 001 built, it does nothing.
--
-- The decision (roles/timescaledb/README.md, "Adopting an existing database"): the old
-- columns stay (the ML pipeline and the old collectors read and write them until the cutover);
-- the project's column is added beside each one that is named differently, filled from it
-- (these tables are small), and a trigger keeps each pair equal on every INSERT and UPDATE,
-- whichever of the two a writer names. Columns the project has and the old table lacks are
-- added so that old writers, which never name them, still insert (a default or NULL).
-- Nothing here touches the big price tables (same columns already) or a table the project
-- does not own.

-- Keeps pairs of columns equal: TG_ARGV = old1, new1, old2, new2, ... On INSERT the one
-- left NULL takes the other's value; on UPDATE the one that changed is copied to the other
-- (the new name wins when a writer changes both).
CREATE OR REPLACE FUNCTION public.gept_sync_column_pairs() RETURNS trigger
LANGUAGE plpgsql AS $gept$
DECLARE
    n jsonb := to_jsonb(NEW);
    o jsonb := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END;
    patch jsonb := '{}'::jsonb;
    old_col text;
    new_col text;
    i integer := 0;
BEGIN
    WHILE i + 1 < TG_NARGS LOOP
        old_col := TG_ARGV[i];
        new_col := TG_ARGV[i + 1];
        IF TG_OP = 'INSERT' THEN
            IF n ->> new_col IS NULL AND n ->> old_col IS NOT NULL THEN
                patch := patch || jsonb_build_object(new_col, n -> old_col);
            ELSIF n ->> old_col IS NULL AND n ->> new_col IS NOT NULL THEN
                patch := patch || jsonb_build_object(old_col, n -> new_col);
            END IF;
        ELSIF n -> new_col IS DISTINCT FROM o -> new_col THEN
            patch := patch || jsonb_build_object(old_col, n -> new_col);
        ELSIF n -> old_col IS DISTINCT FROM o -> old_col THEN
            patch := patch || jsonb_build_object(new_col, n -> old_col);
        END IF;
        i := i + 2;
    END LOOP;
    IF patch <> '{}'::jsonb THEN
        NEW := jsonb_populate_record(NEW, patch);
    END IF;
    RETURN NEW;
END
$gept$;

DO $gept$
DECLARE
    has_col boolean;
BEGIN
    -- items: id -> item_id (the key the collectors upsert on), "limit" -> ge_limit.
    IF to_regclass('public.items') IS NOT NULL
       AND EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = 'public' AND table_name = 'items' AND column_name = 'id')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'items' AND column_name = 'item_id') THEN
        ALTER TABLE public.items ADD COLUMN item_id integer;
        SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'items' AND column_name = 'limit')
          INTO has_col;
        IF has_col THEN
            ALTER TABLE public.items ADD COLUMN ge_limit integer;
            UPDATE public.items SET item_id = id, ge_limit = "limit";
            CREATE TRIGGER gept_sync_columns BEFORE INSERT OR UPDATE ON public.items
                FOR EACH ROW EXECUTE FUNCTION public.gept_sync_column_pairs('id', 'item_id', 'limit', 'ge_limit');
        ELSE
            UPDATE public.items SET item_id = id;
            CREATE TRIGGER gept_sync_columns BEFORE INSERT OR UPDATE ON public.items
                FOR EACH ROW EXECUTE FUNCTION public.gept_sync_column_pairs('id', 'item_id');
        END IF;
        ALTER TABLE public.items ALTER COLUMN item_id SET NOT NULL;
        CREATE UNIQUE INDEX items_item_id_key ON public.items (item_id);
        RAISE NOTICE 'adopted items: item_id (= id) and ge_limit (= "limit") added, kept equal by trigger';
    END IF;

    -- osrs_news: pub_date -> published_at, created_at -> fetched_at, and source (which feed).
    IF to_regclass('public.osrs_news') IS NOT NULL
       AND EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = 'public' AND table_name = 'osrs_news' AND column_name = 'pub_date')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'osrs_news' AND column_name = 'published_at') THEN
        ALTER TABLE public.osrs_news ADD COLUMN published_at timestamptz;
        UPDATE public.osrs_news SET published_at = pub_date;
        IF EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = 'public' AND table_name = 'osrs_news' AND column_name = 'created_at')
           AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_schema = 'public' AND table_name = 'osrs_news' AND column_name = 'fetched_at') THEN
            ALTER TABLE public.osrs_news ADD COLUMN fetched_at timestamptz;
            UPDATE public.osrs_news SET fetched_at = coalesce(created_at, now());
            ALTER TABLE public.osrs_news ALTER COLUMN fetched_at SET DEFAULT now();
            CREATE TRIGGER gept_sync_columns BEFORE INSERT OR UPDATE ON public.osrs_news
                FOR EACH ROW EXECUTE FUNCTION public.gept_sync_column_pairs('pub_date', 'published_at',
                                                                          'created_at', 'fetched_at');
        ELSE
            CREATE TRIGGER gept_sync_columns BEFORE INSERT OR UPDATE ON public.osrs_news
                FOR EACH ROW EXECUTE FUNCTION public.gept_sync_column_pairs('pub_date', 'published_at');
        END IF;
        RAISE NOTICE 'adopted osrs_news: published_at (= pub_date), fetched_at (= created_at) added, kept equal by trigger';
    END IF;
    -- The old stack read only the OSRS news feed: its rows (and rows it still writes, which
    -- never name the column) are 'osrs_news'. A constant default fills old rows instantly.
    IF to_regclass('public.osrs_news') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'osrs_news' AND column_name = 'source') THEN
        ALTER TABLE public.osrs_news ADD COLUMN source text NOT NULL DEFAULT 'osrs_news';
        RAISE NOTICE 'adopted osrs_news: source added (existing rows: osrs_news)';
    END IF;

    -- player_counts: count -> player_count.
    IF to_regclass('public.player_counts') IS NOT NULL
       AND EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = 'public' AND table_name = 'player_counts' AND column_name = 'count')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'player_counts' AND column_name = 'player_count') THEN
        ALTER TABLE public.player_counts ADD COLUMN player_count integer;
        UPDATE public.player_counts SET player_count = count;
        ALTER TABLE public.player_counts ALTER COLUMN player_count SET NOT NULL;
        CREATE TRIGGER gept_sync_columns BEFORE INSERT OR UPDATE ON public.player_counts
            FOR EACH ROW EXECUTE FUNCTION public.gept_sync_column_pairs('count', 'player_count');
        RAISE NOTICE 'adopted player_counts: player_count (= count) added, kept equal by trigger';
    END IF;
END
$gept$;
