#!/usr/bin/perl
# UDP request/reply on Perl's Net::Server::PreFork with Net::Server's own
# default process_request: each datagram D is answered with the datagram
# `You said "D"` (sent back with $client->send; a datagram containing "dump"
# would be answered with a dump of the server object, so the load generator
# never sends one).
#
#   perl bench/perl/udp.pl --port 127.0.0.1:0
#
# The proto defaults to udp here. Net::Server logs "Binding to UDP port 0
# ..." for port 0; once bound, this logs "Bound to UDP port N on host H"
# with the port the kernel chose.
package BenchUdp;

use strict;
use warnings;
use base qw(Net::Server::PreFork);

sub default_values { return { proto => 'udp' } }

sub post_bind_hook {
    my $self = shift;
    for my $sock (grep { $_->NS_proto eq 'UDP' } @{ $self->{server}->{sock} }) {
        $self->log(0, sprintf('Bound to UDP port %d on host %s', $sock->sockport, $sock->sockhost));
    }
}

__PACKAGE__->run;
