# The subset of JSON Schema (2020-12) that board-configs/schema.json uses: type (incl.
# lists and null), required, properties, additionalProperties: false, minProperties,
# enum, pattern, minLength, minimum, items, minItems. Returns a list of problems.
import re

_TYPES = {"object": dict, "array": list, "string": str, "null": type(None)}


def _is(value, t):
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def validate(value, schema, path="$"):
    p = []
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_is(value, t) for t in types):
            return [f"{path}: {value!r} is not of type {'/'.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        p.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            p.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            p.append(f"{path}: {value!r} is too short")
    if _is(value, "number") and "minimum" in schema and value < schema["minimum"]:
        p.append(f"{path}: {value} is less than {schema['minimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            p.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            p += validate(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                p.append(f"{path}.{k}: required")
        if len(value) < schema.get("minProperties", 0):
            p.append(f"{path}: fewer than {schema['minProperties']} properties")
        for k, v in value.items():
            if k in props:
                p += validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                p.append(f"{path}.{k}: not allowed")
    return p
