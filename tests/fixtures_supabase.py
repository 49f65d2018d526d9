"""A database dressed as Supabase dresses a project, from small named SQL pieces.

``SUPABASE`` is the project as Supabase creates it (its default privileges, RLS and two
policies); the other variants are named for what their tests need that it lacks or has
besides. The ``supabase_url`` fixture (conftest) runs ``SUPABASE`` on a fresh seeded
database, or the variant a test names with ``@pytest.mark.supabase(SQL)``.
"""

from __future__ import annotations

T = "public.geometrias"
API_ROLES = ("anon", "authenticated", "service_role")
_ALL = ", ".join(API_ROLES)
RPCS = (
    "public.buscar_geometrias(text, double precision, double precision, double precision, "
    "double precision, integer), public.contagem_mensal(integer), "
    "public.tile_mvt(integer, integer, integer)"
)

# Roles are cluster-wide: created when absent, whichever test runs first.
ROLES = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF;
END $$;
"""
USAGE = f"GRANT USAGE ON SCHEMA public TO {_ALL};\n"
# Every new table, function and sequence in public granted to every API role.
DEFAULT_PRIVILEGES = "".join(
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO {_ALL};\n"
    for kind in ("TABLES", "FUNCTIONS", "SEQUENCES")
)
# What those defaults give the objects revision `schema` made (it ran before them here).
GIVEN = f"""
GRANT ALL ON {T} TO {_ALL};
GRANT ALL ON SEQUENCE public.geometrias_id_seq TO {_ALL};
GRANT ALL ON FUNCTION {RPCS} TO {_ALL};
"""
RLS = f"ALTER TABLE {T} ENABLE ROW LEVEL SECURITY;\n"
# What each role may read through the table by SUPABASE's policies (service_role: BYPASSRLS).
POLICY = {
    "anon": "categoria = 'escola'",
    "authenticated": "data_referencia >= date '2024-01-01'",
    "service_role": "true",
}
POLICIES = f"""
CREATE POLICY anon_escolas ON {T} FOR SELECT TO anon USING ({POLICY["anon"]});
CREATE POLICY authenticated_recentes ON {T} FOR ALL TO authenticated
  USING ({POLICY["authenticated"]}) WITH CHECK ({POLICY["authenticated"]});
"""

# Roles, USAGE and the default privileges only: nothing given to the existing objects.
DEFAULTS = ROLES + USAGE + DEFAULT_PRIVILEGES
# The project as Supabase creates it, with row level security and POLICY's two policies.
SUPABASE = DEFAULTS + GIVEN + RLS + POLICIES
# Row level security off; anon holds SELECT on these columns of the table and nothing more.
ANON_COLUMNS = "id, nome, categoria, data_referencia, geom"
COLUMN_GRANTS = DEFAULTS + GIVEN + f"REVOKE ALL ON {T} FROM anon;\n"
COLUMN_GRANTS += f"GRANT SELECT ({ANON_COLUMNS}) ON {T} TO anon;\n"
# No default privileges: grants written by hand, read-only policies that hide two categories
# from anon and the rows before 2019 from authenticated, comments.
HAND_GRANTED = (
    ROLES
    + USAGE
    + f"""
GRANT SELECT ON {T} TO anon;
GRANT SELECT, INSERT, UPDATE ON {T} TO authenticated;
GRANT ALL ON {T} TO service_role;
"""
    + RLS
    + f"""
CREATE POLICY anon_reads_public ON {T} FOR SELECT TO anon
  USING (categoria NOT IN ('lote', 'bairro'));
CREATE POLICY authenticated_reads_recent ON {T} FOR SELECT TO authenticated
  USING (data_referencia >= date '2019-01-01');
COMMENT ON TABLE {T} IS 'BIBLIOTECA features';
COMMENT ON COLUMN {T}.nome IS 'display name';
"""
)
# Everything a rebuild of the table must carry over: grants with a grant option, a column
# grant, the sequence's grant, policies and a policy's comment, comments on the table, a
# column and an index, a trigger with its comment, a publication.
TO_CARRY_OVER = (
    ROLES
    + USAGE
    + f"""
GRANT SELECT ON {T} TO anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON {T} TO authenticated;
GRANT ALL ON {T} TO service_role WITH GRANT OPTION;
GRANT UPDATE (nome, descricao) ON {T} TO anon;
GRANT USAGE, SELECT ON SEQUENCE public.geometrias_id_seq TO authenticated;
"""
    + RLS
    + f"""
CREATE POLICY leitura_publica ON {T} FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY escrita_autenticada ON {T} AS PERMISSIVE FOR INSERT
  TO authenticated WITH CHECK (categoria <> 'proibida');
COMMENT ON POLICY leitura_publica ON {T} IS 'qualquer um lê';
COMMENT ON TABLE {T} IS 'feições GIS da BIBLIOTECA';
COMMENT ON COLUMN {T}.nome IS 'nome da feição';
COMMENT ON INDEX public.geometrias_geom_gist IS 'viewport';
CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
  $f$ BEGIN NEW.updated_at := now(); RETURN NEW; END $f$;
CREATE TRIGGER geometrias_touch BEFORE UPDATE ON {T}
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
COMMENT ON TRIGGER geometrias_touch ON {T} IS 'carimbo';
CREATE PUBLICATION supabase_realtime FOR TABLE {T};
"""
)
