//! Templates and expressions, by minijinja: a step's input is JSON whose strings are
//! templates; `when`, `for_each` and `repeat.until` are expressions.

use minijinja::Environment;
use serde_json::Value;

/// The one environment: strict, so a missing value is an error rather than an empty string.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// Renders `input` against `context`. A string that is exactly one `{{ expression }}`
/// keeps the expression's JSON type (a list stays a list); other strings render as text.
pub fn render(input: &Value, context: &Value) -> Result<Value, minijinja::Error> {
    let env = environment();
    render_with(&env, input, context)
}

fn render_with(
    env: &Environment<'_>,
    input: &Value,
    context: &Value,
) -> Result<Value, minijinja::Error> {
    Ok(match input {
        Value::String(text) => match whole_expression(text) {
            Some(expr) => evaluate(env, expr, context)?,
            None => Value::String(env.render_str(text, context)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_with(env, i, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_with(env, v, context)?)))
                .collect::<Result<_, minijinja::Error>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates a whole-string expression to JSON; an undefined result is an error, as it is
/// in a template.
fn evaluate(env: &Environment<'_>, expr: &str, context: &Value) -> Result<Value, minijinja::Error> {
    let value = env.compile_expression(expr)?.eval(context)?;
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            format!("`{expr}` is undefined"),
        ));
    }
    serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))
}

/// `{{ x }}` alone (ignoring surrounding space) → `x`.
pub(crate) fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Evaluates an expression as a condition.
pub fn truthy(expression: &str, context: &Value) -> Result<bool, minijinja::Error> {
    Ok(environment()
        .compile_expression(expression)?
        .eval(context)?
        .is_true())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whole_expressions_keep_their_type() {
        let context = json!({"inputs": {"topic": "streams", "items": [1, 2]}, "item": 3});
        let input = json!({"text": "about {{ inputs.topic }}", "list": "{{ inputs.items }}", "n": "{{ item }}", "fixed": 7});
        assert_eq!(
            render(&input, &context).unwrap(),
            json!({"text": "about streams", "list": [1, 2], "n": 3, "fixed": 7})
        );
    }

    #[test]
    fn missing_values_are_errors() {
        assert!(render(&json!("{{ inputs.nope }}"), &json!({"inputs": {}})).is_err());
    }

    #[test]
    fn conditions() {
        let context = json!({"output": {"approved": true}, "round": 2});
        assert!(truthy("output.approved", &context).unwrap());
        assert!(!truthy("round > 3", &context).unwrap());
    }
}
