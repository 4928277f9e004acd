function bump(rec, n)
  rec['c'] = (rec['c'] or 0) + n
  aerospike:update(rec)
  return rec['c']
end
