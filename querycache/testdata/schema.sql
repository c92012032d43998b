-- Fixture for the corpus and catalog tests: one database holding every kind of
-- relation the analyzer must tell apart.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    name varchar(100),
    org_id integer,
    age integer,
    mood mood,
    nick text COLLATE ci,
    code char(4),
    score double precision,
    balance numeric(12,2),
    born date,
    seen timestamp,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    token uuid,
    avatar bytea,
    active boolean,
    data jsonb,
    level posint
);
CREATE TABLE registry (id integer PRIMARY KEY, klass regclass);
CREATE TABLE orgs (id serial PRIMARY KEY, name text, parent_id integer);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, status text, total numeric, created_at timestamptz);
CREATE TABLE order_items (order_id bigint, line integer, product_id uuid, qty integer, PRIMARY KEY (order_id, line));
CREATE TABLE products (id uuid PRIMARY KEY, sku text UNIQUE, price numeric, tags text[]);
CREATE TABLE pets (id bigserial PRIMARY KEY, owner_id bigint, name text);
CREATE TABLE cars (id bigserial PRIMARY KEY, model text, user_cars bigint);
CREATE TABLE place (country text, city text, telcode integer);

CREATE TABLE events (id bigint, kind text, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY LIST (kind);
CREATE TABLE events_2025_a PARTITION OF events_2025 FOR VALUES IN ('a');
CREATE TABLE events_2025_b PARTITION OF events_2025 FOR VALUES IN ('b');

CREATE TABLE animals (id integer PRIMARY KEY, name text);
CREATE TABLE dogs (bark text) INHERITS (animals);

CREATE VIEW active_users AS SELECT id, email FROM users WHERE deleted_at IS NULL;
CREATE VIEW user_orders AS SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id;
CREATE VIEW recent_orders AS SELECT * FROM orders WHERE created_at > now() - interval '1 day';
CREATE VIEW nested_view AS SELECT * FROM active_users;
CREATE MATERIALIZED VIEW order_totals AS SELECT user_id, sum(total) AS total FROM orders GROUP BY user_id;

CREATE UNLOGGED TABLE scratch (id integer, v text);
CREATE SEQUENCE ticket_seq;
CREATE FOREIGN DATA WRAPPER dummy_fdw;
CREATE SERVER dummy_server FOREIGN DATA WRAPPER dummy_fdw;
CREATE FOREIGN TABLE remote_items (id integer, v text) SERVER dummy_server;

CREATE TABLE secrets (id integer PRIMARY KEY, owner text, body text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON secrets USING (owner = current_user);

CREATE FUNCTION pick_random() RETURNS integer LANGUAGE sql VOLATILE AS 'SELECT 4';
CREATE FUNCTION add_one(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';
CREATE FUNCTION stable_lookup(integer) RETURNS text LANGUAGE sql STABLE AS 'SELECT name FROM orgs WHERE id = $1';

CREATE SCHEMA tenant_a;
CREATE SCHEMA tenant_b;
CREATE TABLE tenant_a.accounts (id integer PRIMARY KEY, name text);
CREATE TABLE tenant_b.accounts (id integer PRIMARY KEY, name text);

-- Types whose conversions depend on more than the key: time to timetz takes today's
-- zone offset, money reads lc_monetary.
CREATE TABLE shifts (id integer PRIMARY KEY, starts time, ends timetz, price money);
