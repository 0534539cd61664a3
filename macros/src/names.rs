//! Names: `add_entry` becomes the method `AddEntry`, the constant
//! `ADD_ENTRY` and the request type `AddEntryRequest`; `KvStore` the module
//! `kv_store`.

/// `snake_case` to `CamelCase`.
pub fn camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// `snake_case` to `SCREAMING_SNAKE_CASE`.
pub fn screaming(snake: &str) -> String {
    snake.to_uppercase()
}

/// `CamelCase` to `snake_case`.
pub fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert_eq!(camel("add"), "Add");
        assert_eq!(camel("list_by_prefix"), "ListByPrefix");
        assert_eq!(camel("_get__it"), "GetIt");
        assert_eq!(screaming("list_by_prefix"), "LIST_BY_PREFIX");
        assert_eq!(snake("KvStore"), "kv_store");
        assert_eq!(snake("Calc"), "calc");
    }
}
