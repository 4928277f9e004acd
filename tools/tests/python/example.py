# The README's Python client example: run spike-server, then python3 example.py
import aerospike

client = aerospike.client({"hosts": [("127.0.0.1", 3000)]}).connect()
key = ("test", "users", "grace")
client.put(key, {"name": "Grace", "visits": 1})
client.increment(key, "visits", 1)
_, meta, bins = client.get(key)
print(bins, "generation", meta["gen"])
client.close()
