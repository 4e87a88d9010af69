//! Error messages with their causes: reqwest's and tonic's `Display` alone say little
//! ("error sending request", "transport error"), the reason is in the source chain.

/// `e` followed by each of its sources, joined with ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::chain;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn joins_every_cause_in_order() {
        let e = Layer(
            "transport error",
            Some(Box::new(Layer("connection refused", None))),
        );
        assert_eq!(chain(&e), "transport error: connection refused");
        assert_eq!(chain(&Layer("alone", None)), "alone");
    }
}
