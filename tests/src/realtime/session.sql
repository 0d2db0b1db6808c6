-- Session-local helpers of the Realtime stand-in's change feed, created in `pg_temp` on the
-- poller's own connection (they vanish with it, like its temporary replication slot). They
-- follow supabase/realtime's `realtime.cast`, `realtime.apply_rls` (output shape),
-- `realtime.check_equality_op`, `realtime.is_visible_through_filters` and
-- `realtime.subscription_check_filters`, minus row level security and roles: the stand-in
-- shows every subscriber every row, as the service role sees them.

-- A wal2json value (as text) to the JSON Realtime sends: `to_jsonb` of the typed value.
create function pg_temp.rt_cast(val text, type_ regtype) returns jsonb
language plpgsql stable as $$
declare
  res jsonb;
begin
  if type_::text = 'bytea' then
    return to_jsonb(val);
  end if;
  execute format('select to_jsonb(%L::' || type_::text || ')', val) into res;
  return res;
end
$$;

-- wal2json columns (`columns` or `identity`) to a JSON object of typed values.
create function pg_temp.rt_values(cols jsonb, max_bytes int, too_big bool) returns jsonb
language sql stable as $$
  select coalesce(jsonb_object_agg(v.name, v.value), '{}'::jsonb)
  from (
    select x ->> 'name' as name,
           pg_temp.rt_cast((x -> 'value') #>> '{}',
                           coalesce((x ->> 'typeoid')::regtype, (x ->> 'type')::regtype)) as value
    from jsonb_array_elements(coalesce(cols, '[]'::jsonb)) x
  ) v
  where not too_big or octet_length(v.value::text) <= 64
$$;

-- One wal2json (format 2) change to the `data` of a `postgres_changes` message:
-- {schema, table, commit_timestamp, type, columns, record?, old_record?, errors}.
create function pg_temp.rt_change(wal jsonb, max_record_bytes int) returns jsonb
language plpgsql stable as $$
declare
  action text = case wal ->> 'action'
    when 'I' then 'INSERT' when 'U' then 'UPDATE' when 'D' then 'DELETE' else 'ERROR' end;
  entity_ regclass;
  too_big bool = octet_length(wal::text) > max_record_bytes;
  base jsonb = jsonb_build_object('schema', wal ->> 'schema', 'table', wal ->> 'table', 'type', action);
  out jsonb;
begin
  if action <> 'DELETE' and jsonb_array_length(coalesce(wal -> 'pk', '[]'::jsonb)) = 0 then
    return base || jsonb_build_object(
      'commit_timestamp', null, 'columns', '[]'::jsonb,
      'errors', jsonb_build_array('Error 400: Bad Request, no primary key'))
      || case when action = 'INSERT' then jsonb_build_object('record', '{}'::jsonb)
              else jsonb_build_object('record', '{}'::jsonb, 'old_record', '{}'::jsonb) end;
  end if;
  entity_ = (quote_ident(wal ->> 'schema') || '.' || quote_ident(wal ->> 'table'))::regclass;
  out = base || jsonb_build_object(
    'commit_timestamp', to_char(((wal ->> 'timestamp')::timestamptz at time zone 'utc'),
                                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'columns', (
      select coalesce(jsonb_agg(jsonb_build_object('name', pa.attname, 'type', pt.typname)
                                order by pa.attnum), '[]'::jsonb)
      from pg_attribute pa join pg_type pt on pa.atttypid = pt.oid
      where pa.attrelid = entity_ and pa.attnum > 0 and not pa.attisdropped),
    'errors', case when too_big then jsonb_build_array('Error 413: Payload Too Large') end);
  if action in ('INSERT', 'UPDATE') then
    -- unchanged TOASTed values are missing from `columns`: take them from the old row
    out = out || jsonb_build_object('record',
      pg_temp.rt_values(wal -> 'identity', max_record_bytes, too_big)
      || pg_temp.rt_values(wal -> 'columns', max_record_bytes, too_big));
  end if;
  if action = 'UPDATE' then
    out = out || jsonb_build_object('old_record',
      pg_temp.rt_values(wal -> 'identity', max_record_bytes, too_big));
  end if;
  if action = 'DELETE' then
    -- with row level security a delete cannot be checked per subscriber: only the key is sent
    out = out || jsonb_build_object('old_record', pg_temp.rt_values(
      case when (select relrowsecurity from pg_class where oid = entity_) then (
        select coalesce(jsonb_agg(x), '[]'::jsonb) from jsonb_array_elements(wal -> 'identity') x
        where x ->> 'name' in (select pk ->> 'name' from jsonb_array_elements(wal -> 'pk') pk))
      else wal -> 'identity' end,
      max_record_bytes, too_big));
  end if;
  return out;
exception when others then
  return base || jsonb_build_object('stand_in_error', sqlerrm);
end
$$;

-- Which subscriptions see a change. `subs` is [{k, schema, table, event, role, claims, column?,
-- op?, value?, negate?}]; returns the `k` of each one that sees it. Only tables (and actions) of
-- publication `pub` are streamed, unless `pub` is null. Filters compare typed values with
-- PostgreSQL's own operators, on the new row for INSERT/UPDATE and on the old row (the replica
-- identity) for DELETE; a filter on a column the change does not carry hides it. On a table with
-- row level security an INSERT/UPDATE is seen only by subscribers whose role (with their JWT
-- claims as `request.jwt.claims`) can select the row by primary key, as Realtime checks it;
-- DELETEs are not checked (Realtime cannot either; their old_record is cut to the key instead).
create function pg_temp.rt_match(wal jsonb, subs jsonb, pub text) returns int[]
language plpgsql volatile as $$
declare
  action text = case wal ->> 'action'
    when 'I' then 'INSERT' when 'U' then 'UPDATE' when 'D' then 'DELETE' else 'ERROR' end;
  src jsonb = case when action = 'DELETE' then wal -> 'identity' else wal -> 'columns' end;
  entity_ regclass;
  rls bool;
  pk_sql text;
  s jsonb;
  col jsonb;
  type_ text;
  op_symbol text;
  visible bool;
  res int[] = '{}';
begin
  if pub is not null and not exists (
    select 1 from pg_publication p join pg_publication_tables t on t.pubname = p.pubname
    where p.pubname = pub and t.schemaname = wal ->> 'schema' and t.tablename = wal ->> 'table'
      and case action when 'INSERT' then p.pubinsert when 'UPDATE' then p.pubupdate
                      when 'DELETE' then p.pubdelete else false end
  ) then
    return res;
  end if;
  for s in select x from jsonb_array_elements(subs) x loop
    continue when not ((s ->> 'schema') = '*' or (s ->> 'schema') = (wal ->> 'schema'));
    continue when not ((s ->> 'table') = '*' or (s ->> 'table') = (wal ->> 'table'));
    continue when not ((s ->> 'event') = '*' or (s ->> 'event') = action);
    if s ->> 'column' is not null then
      col = null;
      select x into col from jsonb_array_elements(coalesce(src, '[]'::jsonb)) x
        where x ->> 'name' = s ->> 'column' limit 1;
      continue when col is null;
      type_ = coalesce((col ->> 'typeoid')::regtype, (col ->> 'type')::regtype)::text;
      op_symbol = case s ->> 'op'
        when 'eq' then '=' when 'neq' then '!=' when 'lt' then '<' when 'lte' then '<='
        when 'gt' then '>' when 'gte' then '>=' when 'in' then '= any' end;
      continue when op_symbol is null;
      begin
        execute format('select %L::%s %s (%L::%s)', (col -> 'value') #>> '{}', type_, op_symbol,
                       s ->> 'value', case when s ->> 'op' = 'in' then type_ || '[]' else type_ end)
          into visible;
        if coalesce((s ->> 'negate')::bool, false) then
          visible = not visible;
        end if;
      exception when others then
        visible = false;
      end;
      continue when not coalesce(visible, false);
    end if;
    if action <> 'DELETE' then
      if rls is null then
        entity_ = (quote_ident(wal ->> 'schema') || '.' || quote_ident(wal ->> 'table'))::regclass;
        rls = coalesce((select relrowsecurity from pg_class where oid = entity_), false);
        if rls then
          pk_sql = (
            select 'select exists (select 1 from ' || entity_::text || ' where '
                   || string_agg(quote_ident(c ->> 'name') || ' = ' || quote_nullable((c -> 'value') #>> '{}'), ' and ')
                   || ')'
            from jsonb_array_elements(wal -> 'columns') c
            where c ->> 'name' in (select pk ->> 'name' from jsonb_array_elements(wal -> 'pk') pk));
        end if;
      end if;
      if rls then
        visible = false;
        if pk_sql is not null then
          begin
            perform set_config('role', s ->> 'role', true);
            perform set_config('request.jwt.claims', s ->> 'claims', true);
            execute pk_sql into visible;
          exception when others then
            visible = false;
          end;
          perform set_config('role', null, true);
          perform set_config('request.jwt.claims', null, true);
        end if;
        continue when not coalesce(visible, false);
      end if;
    end if;
    res = res || (s ->> 'k')::int;
  end loop;
  return res;
end
$$;

-- Checks one subscription's parameters like Realtime's subscription insert: 'none' when no table
-- (of publication `p_publication`, unless null) matches, 'exception:<message>' for an unknown role
-- or a bad filter, null when it is fine.
create function pg_temp.rt_check(p_schema text, p_table text, p_column text, p_op text, p_value text,
                                 p_publication text, p_role text)
returns text
language plpgsql stable as $$
declare
  ent regclass;
  n int = 0;
  col_type regtype;
  in_val jsonb;
begin
  begin
    perform p_role::regrole;
  exception when others then
    return 'exception:' || sqlerrm;
  end;
  for ent in
    select c.oid::regclass
    from pg_class c join pg_namespace ns on ns.oid = c.relnamespace
    where c.relkind in ('r', 'p')
      and ns.nspname not in ('pg_catalog', 'information_schema')
      and ns.nspname not like 'pg\_toast%'
      and ns.nspname not like 'pg\_temp%'
      and ns.nspname like (case p_schema when '*' then '%' else p_schema end) escape ''
      and c.relname like (case p_table when '*' then '%' else p_table end) escape ''
      and (p_publication is null or exists (
        select 1 from pg_publication_tables t
        where t.pubname = p_publication and t.schemaname = ns.nspname and t.tablename = c.relname))
  loop
    n = n + 1;
    if p_column is not null then
      col_type = (select atttypid::regtype from pg_attribute
                  where attrelid = ent and attname = p_column and attnum > 0 and not attisdropped);
      if col_type is null then
        return 'exception:invalid column for filter ' || p_column;
      end if;
      begin
        if p_op = 'in' then
          in_val = pg_temp.rt_cast(p_value, (col_type::text || '[]')::regtype);
          if coalesce(jsonb_array_length(in_val), 0) > 100 then
            return 'exception:too many values for `in` filter. Maximum 100';
          end if;
        else
          perform pg_temp.rt_cast(p_value, col_type);
        end if;
      exception when others then
        return 'exception:' || sqlerrm;
      end;
    end if;
  end loop;
  if n = 0 then
    return 'none';
  end if;
  return null;
end
$$;
