//! Redis key names. Everything MindBus writes lives under one configurable prefix.

/// The key names under a prefix (default `mindbus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:cmd:{<role>}`: one role's commands. The braces are a Redis Cluster hash tag.
    pub fn commands(&self, role: &str) -> String {
        format!("{}:cmd:{{{role}}}", self.prefix)
    }

    /// The pattern that matches every role's command stream, for `SCAN`.
    pub fn commands_pattern(&self) -> String {
        format!("{}:cmd:*", self.prefix)
    }

    /// The role a command stream key belongs to.
    pub fn role_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        stream
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":cmd:{")?
            .strip_suffix('}')
    }

    /// `<prefix>:roles`: the registry of roles, a set each agent adds its role to when it
    /// creates its group, so a role can be looked up without scanning the keyspace.
    pub fn roles(&self) -> String {
        format!("{}:roles", self.prefix)
    }

    /// `<prefix>:result`: every result.
    pub fn results(&self) -> String {
        format!("{}:result", self.prefix)
    }

    /// `<prefix>:event`: lifecycle and progress events.
    pub fn events(&self) -> String {
        format!("{}:event", self.prefix)
    }

    /// `<prefix>:dlq`: dead letters.
    pub fn dead_letters(&self) -> String {
        format!("{}:dlq", self.prefix)
    }

    /// `<prefix>:control`: broadcast to every agent (cancellations), read without a group.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// `<prefix>:reply:<token>`: a client's private reply stream.
    pub fn reply(&self, token: &str) -> String {
        format!("{}:reply:{token}", self.prefix)
    }

    /// Checks a command's `replyto`: it must name a reply stream, `<prefix>:reply:<token>`
    /// with a token of 1 to 128 of `A-Z a-z 0-9 . _ -`, so a command can never make an agent
    /// write to (let alone cap or expire) a stream of the mesh, nor of a mesh whose prefix
    /// nests under this one (no `:` or braces in the token).
    pub fn check_reply(&self, key: &str) -> Result<(), String> {
        let token = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":reply:"));
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        match token {
            Some(token) if (1..=128).contains(&token.len()) && token.chars().all(ok_char) => Ok(()),
            _ => Err(format!(
                "`{key}` is not a reply stream: it must be `{}:reply:` and a token of 1 to 128 \
                 of A-Z a-z 0-9 . _ -",
                self.prefix
            )),
        }
    }

    /// `<prefix>:done:{<role>}:<idempotency key>`: set once the result of a command of `role`
    /// with that `idempotencykey` is accepted. The braces keep it in its command stream's
    /// Redis Cluster slot.
    pub fn done(&self, role: &str, idempotency_key: &str) -> String {
        format!("{}:done:{{{role}}}:{idempotency_key}", self.prefix)
    }

    /// `<prefix>:llm:usage:run:<run id>`: a run's LLM totals (`calls`, `tokens_in`,
    /// `tokens_out`, `cost_micros`), kept by the LLM roles.
    pub fn run_usage(&self, run_id: &str) -> String {
        format!("{}:llm:usage:run:{run_id}", self.prefix)
    }

    /// `<prefix>:llm:usage:tenant:<tenant>:<UTC day>`: one tenant's LLM totals for a day.
    pub fn tenant_usage(&self, tenant: &str, day: &str) -> String {
        format!("{}:llm:usage:tenant:{tenant}:{day}", self.prefix)
    }

    /// `<prefix>:llm:usage:day:<UTC day>`: the deployment's LLM totals for a day.
    pub fn daily_usage(&self, day: &str) -> String {
        format!("{}:llm:usage:day:{day}", self.prefix)
    }

    /// `<prefix>:llm:limit:<scope>:<what>`: a shared rate limit's state (GCRA), `what`
    /// being `requests` or `tokens`.
    pub fn llm_limit(&self, scope: &str, what: &str) -> String {
        format!("{}:llm:limit:{scope}:{what}", self.prefix)
    }

    /// `<prefix>:llm:cache:<digest>`: a cached LLM answer.
    pub fn llm_cache(&self, digest: &str) -> String {
        format!("{}:llm:cache:{digest}", self.prefix)
    }

    /// `<prefix>:idem:<caller>:<key digest>`: the gateway's slot for one API key's
    /// `Idempotency-Key`.
    pub fn idempotency(&self, caller: &str, key_digest: &str) -> String {
        format!("{}:idem:{caller}:{key_digest}", self.prefix)
    }

    /// `<prefix>:sent:<command id>`: the role of a command the gateway published.
    pub fn sent(&self, id: &str) -> String {
        format!("{}:sent:{id}", self.prefix)
    }

    /// The shared streams every deployment has, in display order.
    pub fn shared_streams(&self) -> [String; 3] {
        [self.results(), self.events(), self.dead_letters()]
    }
}

/// Checks a role name: lower-case letters, digits, `-` and `_`, 1 to 64 characters.
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if role.is_empty() || role.len() > 64 || !role.chars().all(ok_char) {
        return Err(format!(
            "role `{role}` must be 1 to 64 of a-z, 0-9, `-` and `_`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_stream_names_round_trip() {
        let keys = Keys::new("mb");
        assert_eq!(keys.commands("echo"), "mb:cmd:{echo}");
        assert_eq!(keys.role_of("mb:cmd:{echo}"), Some("echo"));
        assert_eq!(keys.role_of("other:cmd:{echo}"), None);
        assert_eq!(keys.role_of("mb:result"), None);
    }

    #[test]
    fn only_reply_streams_are_replies() {
        let keys = Keys::new("mb");
        assert!(keys.check_reply("mb:reply:abc").is_ok());
        for bad in [
            "mb:event",
            "mb:result",
            "mb:cmd:{echo}",
            "mb:reply:",
            "other:reply:x",
            "mb:replyx",
            "mb:reply:b:cmd:{echo}",
            "mb:reply:{echo}",
        ] {
            assert!(keys.check_reply(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_checked() {
        assert!(validate_role("writer-2").is_ok());
        for bad in ["", "Writer", "a b", "x}"] {
            assert!(validate_role(bad).is_err(), "{bad}");
        }
    }
}
