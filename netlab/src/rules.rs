//! The nftables rules the hub forwards by, as text (`nft -f -`), and the
//! reading of their counters: pure, tested without a lab.

/// The rules of the loss of what a host receives, in its own namespace:
/// at its interface's ingress (after the hub has cut offload batches into
/// packets, so each packet is lost or kept on its own), a `loss` fraction
/// of its IPv4 packets dropped at random (in millionths; ARP is spared, as
/// its loss would stall a path for a second), and what passes, both
/// counted. A drop there is silent to the sender, as on a wire.
pub(crate) fn loss_rules(device: &str, loss: f64) -> String {
    let below = (loss.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
    let drop = if below > 0 {
        format!("  meta protocol ip numgen random mod 1000000 < {below} counter drop\n")
    } else {
        String::new()
    };
    format!(
        "table netdev qlab {{}}\nflush table netdev qlab\n\
         table netdev qlab {{\n chain pass {{\n  \
         type filter hook ingress device \"{device}\" priority 0; policy accept;\n{drop}  \
         meta protocol ip counter\n }}\n}}\n"
    )
}

/// The rules that cut the host on `port` off: whatever it sends and
/// whatever is sent to it, dropped in the hub.
pub(crate) fn cut_rules(port: &str) -> String {
    format!(
        "table ip qcut_{port} {{}}\nflush table ip qcut_{port}\n\
         table ip qcut_{port} {{\n chain pass {{\n  \
         type filter hook forward priority -10; policy accept;\n  \
         iifname \"{port}\" drop\n  oifname \"{port}\" drop\n }}\n}}\n"
    )
}

/// The rules that undo [`cut_rules`].
pub(crate) fn heal_rules(port: &str) -> String {
    format!("table ip qcut_{port} {{}}\ndelete table ip qcut_{port}\n")
}

/// Packets received and dropped, from the listing of the rules of
/// [`loss_rules`]: the drop rule's counter (if any), then the counter of
/// what passed.
pub(crate) fn received_and_dropped(listing: &str) -> (u64, u64) {
    let counts: Vec<u64> = listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    match counts[..] {
        [dropped, passed] => (dropped + passed, dropped),
        [passed] => (passed, 0),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_random_drop_in_millionths_of_what_a_host_receives() {
        let one = loss_rules("eth0", 0.01);
        assert!(
            one.contains("meta protocol ip numgen random mod 1000000 < 10000 counter drop"),
            "{one}"
        );
        assert!(
            one.contains("table netdev qlab {") && one.contains("hook ingress device \"eth0\"")
        );
        assert!(!loss_rules("eth0", 0.0).contains("drop"));
        assert!(loss_rules("eth0", 7.0).contains("< 1000000 counter drop"));
        let cut = cut_rules("p2");
        assert!(cut.contains("iifname \"p2\" drop") && cut.contains("oifname \"p2\" drop"));
        assert!(heal_rules("p2").contains("delete table ip qcut_p2"));
    }

    #[test]
    fn the_counters_give_what_was_received_and_dropped() {
        let listing = "table netdev qlab {\n\tchain pass {\n\t\ttype filter hook ingress device \"eth0\" priority filter; policy accept;\n\t\tmeta protocol ip numgen random mod 1000000 < 10000 counter packets 12 bytes 900 drop\n\t\tmeta protocol ip counter packets 988 bytes 70000\n\t}\n}\n";
        assert_eq!(received_and_dropped(listing), (1000, 12));
        assert_eq!(received_and_dropped("counter packets 5 bytes 1"), (5, 0));
        assert_eq!(received_and_dropped("nothing"), (0, 0));
    }
}
