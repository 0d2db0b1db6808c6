-- CollisionOS Monitor: initial schema.
--
-- Written for two places at once:
--   * a real Supabase project (`supabase db push`, or pasted into the SQL editor), where the
--     roles below already exist and are left alone;
--   * the throwaway PostgreSQL 15 cluster of `collisionos_tests::stack`, which starts from a
--     bare `initdb` and gets the same roles here.
-- Every statement is safe to run twice.

-- ---------------------------------------------------------------------------------------------
-- Roles (Supabase's names). A JWT's `role` claim picks one of the first three; PostgREST logs in
-- as `authenticator` and switches with SET ROLE, which is why `authenticator` is NOINHERIT: it
-- holds no table privilege of its own.
-- ---------------------------------------------------------------------------------------------
do $roles$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$roles$;

do $memberships$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (
      select 1
      from pg_auth_members m
      join pg_roles granted on granted.oid = m.roleid
      join pg_roles member on member.oid = m.member
      where granted.rolname = r and member.rolname = 'authenticator'
    ) then
      execute format('grant %I to authenticator', r);
    end if;
  end loop;
end
$memberships$;

-- ---------------------------------------------------------------------------------------------
-- updated_at: stamped by the database on every update. An update that sets updated_at to a value
-- different from the stored one keeps it: that is the offline outbox replaying an edit made while
-- the shop was disconnected, and conflict resolution compares those edit times.
-- ---------------------------------------------------------------------------------------------
create or replace function public.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $fn$
begin
  if new.updated_at is not distinct from old.updated_at then
    new.updated_at := now();
  end if;
  return new;
end
$fn$;

comment on function public.set_updated_at() is
  'Trigger: stamps updated_at = now() unless the update sets a different updated_at itself.';

-- ---------------------------------------------------------------------------------------------
-- Tables. Primary keys are UUIDs the client may generate (offline writes are idempotent
-- upserts); the defaults cover writers that do not.
-- ---------------------------------------------------------------------------------------------
create table if not exists public.shops (
  id          uuid primary key default gen_random_uuid(),
  name        text not null check (length(btrim(name)) > 0),
  phone       text,
  email       text,
  address     text,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);

create table if not exists public.customers (
  id          uuid primary key default gen_random_uuid(),
  shop_id     uuid references public.shops (id) on delete cascade,
  first_name  text not null,
  last_name   text not null,
  email       text,
  phone       text,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);

create table if not exists public.vehicles (
  id           uuid primary key default gen_random_uuid(),
  customer_id  uuid references public.customers (id) on delete cascade,
  vin          text check (vin is null or length(vin) between 1 and 17),
  make         text,
  model        text,
  year         integer check (year is null or year between 1886 and 2100),
  color        text,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);

-- A repair order. Statuses follow a collision job through the shop:
--   estimate -> approved -> scheduled -> intake -> disassembly -> parts_pending -> body -> paint
--   -> reassembly -> quality_check -> ready -> delivered, with on_hold and cancelled beside them.
create table if not exists public.jobs (
  id              uuid primary key default gen_random_uuid(),
  ro_number       text not null unique check (length(btrim(ro_number)) > 0),
  status          text not null default 'estimate'
                  constraint jobs_status_check check (status in (
                    'estimate', 'approved', 'scheduled', 'intake', 'disassembly',
                    'parts_pending', 'body', 'paint', 'reassembly', 'quality_check',
                    'ready', 'delivered', 'on_hold', 'cancelled'
                  )),
  customer_id     uuid references public.customers (id) on delete set null,
  vehicle_id      uuid references public.vehicles (id) on delete set null,
  estimate_total  numeric(12, 2) not null default 0 check (estimate_total >= 0),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now()
);

-- One line of a repair order's parts list.
create table if not exists public.part_lines (
  id           uuid primary key default gen_random_uuid(),
  ro_id        uuid not null references public.jobs (id) on delete cascade,
  part_number  text,
  description  text not null default '',
  quantity     numeric(10, 2) not null default 1 check (quantity > 0),
  price        numeric(12, 2) not null default 0 check (price >= 0),
  status       text not null default 'needed'
               constraint part_lines_status_check check (status in (
                 'needed', 'ordered', 'backordered', 'received', 'installed', 'returned', 'cancelled'
               )),
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);

-- ---------------------------------------------------------------------------------------------
-- Indexes: the three the memo names, then one per foreign key (joins, embeds and cascades).
-- ---------------------------------------------------------------------------------------------
create index if not exists idx_customers_email on public.customers (email);
create index if not exists idx_jobs_status on public.jobs (status);
create index if not exists idx_parts_ro_id on public.part_lines (ro_id);

create index if not exists idx_customers_shop_id on public.customers (shop_id);
create index if not exists idx_vehicles_customer_id on public.vehicles (customer_id);
create index if not exists idx_vehicles_vin on public.vehicles (vin);
create index if not exists idx_jobs_customer_id on public.jobs (customer_id);
create index if not exists idx_jobs_vehicle_id on public.jobs (vehicle_id);
create index if not exists idx_jobs_updated_at on public.jobs (updated_at);

-- ---------------------------------------------------------------------------------------------
-- Triggers.
-- ---------------------------------------------------------------------------------------------
create or replace trigger shops_set_updated_at
  before update on public.shops
  for each row execute function public.set_updated_at();
create or replace trigger customers_set_updated_at
  before update on public.customers
  for each row execute function public.set_updated_at();
create or replace trigger vehicles_set_updated_at
  before update on public.vehicles
  for each row execute function public.set_updated_at();
create or replace trigger jobs_set_updated_at
  before update on public.jobs
  for each row execute function public.set_updated_at();
create or replace trigger part_lines_set_updated_at
  before update on public.part_lines
  for each row execute function public.set_updated_at();

-- Realtime: UPDATE and DELETE events on the jobs board carry the whole old row.
alter table public.jobs replica identity full;

-- ---------------------------------------------------------------------------------------------
-- Privileges as Supabase sets them up: the API roles get the tables, and row level security is
-- what decides. `service_role` bypasses RLS (the backend's key); signed-in staff
-- (`authenticated`) work on every table; `anon` (the public key alone) reads the shop directory
-- and nothing else — customer names, e-mails and phone numbers are never public.
-- ---------------------------------------------------------------------------------------------
grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to anon, authenticated, service_role;
grant all on all sequences in schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

-- A trigger function is no API: nobody calls it directly.
revoke all on function public.set_updated_at() from public, anon, authenticated;

alter table public.shops enable row level security;
alter table public.customers enable row level security;
alter table public.vehicles enable row level security;
alter table public.jobs enable row level security;
alter table public.part_lines enable row level security;

drop policy if exists shops_public_read on public.shops;
create policy shops_public_read on public.shops
  for select to anon, authenticated using (true);

do $policies$
declare
  t text;
begin
  foreach t in array array['shops', 'customers', 'vehicles', 'jobs', 'part_lines'] loop
    execute format('drop policy if exists %I on public.%I', t || '_staff_all', t);
    execute format(
      'create policy %I on public.%I for all to authenticated using (true) with check (true)',
      t || '_staff_all', t
    );
  end loop;
end
$policies$;

-- ---------------------------------------------------------------------------------------------
-- Realtime (Supabase): publish the tables the app subscribes to. Supabase creates the
-- publication; a bare cluster gets an empty one here.
-- ---------------------------------------------------------------------------------------------
do $realtime$
declare
  t text;
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not (select puballtables from pg_publication where pubname = 'supabase_realtime') then
    foreach t in array array['customers', 'jobs', 'part_lines'] loop
      if not exists (
        select 1 from pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = t
      ) then
        execute format('alter publication supabase_realtime add table public.%I', t);
      end if;
    end loop;
  end if;
end
$realtime$;
