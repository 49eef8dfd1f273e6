#!/usr/bin/perl
# The line-echo benchmark protocol over TLS on Perl's Net::Server::PreFork
# with proto ssl (Net::Server::Proto::SSL, over IO::Socket::SSL and
# OpenSSL): each line L is answered "You said 'L'\r\n"; after a line
# containing "quit", or at end of input, the connection closes.
#
#   perl bench/perl/ssl.pl --port 127.0.0.1:0 \
#       --SSL_cert_file=cert.pem --SSL_key_file=key.pem
#
# The proto defaults to ssl here. The listening socket and its SSL context
# are made in the parent, before the children fork: every child resumes the
# sessions any child issued (OpenSSL's session tickets, keyed per context).
# The handshake runs in the child that accepts the connection, when the
# request starts. STDIN and STDOUT are tied to the client's IO::Socket::SSL
# handle (Net::Server does that for SSL).
#
# Net::Server logs "Binding to SSL port 0 ..." for port 0; once bound, this
# logs "Bound to SSL port N on host H" with the port the kernel chose.
package BenchSsl;

use strict;
use warnings;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use base qw(Net::Server::PreFork);

sub default_values { return { proto => 'ssl' } }

sub post_bind_hook {
    my $self = shift;
    for my $sock (grep { $_->NS_proto eq 'SSL' } @{ $self->{server}->{sock} }) {
        $self->log(0, sprintf('Bound to SSL port %d on host %s', $sock->sockport, $sock->sockhost));
    }
}

# TCP_NODELAY on the client socket before the handshake (Net::Server's
# post_accept runs it): over TLS 1.3, OpenSSL writes its session tickets
# after the handshake and the reply right after them; with Nagle's
# algorithm the reply would wait for the client's delayed ACK of the
# tickets, about 40 ms per connection. The load generator, native-echo and
# netserver-host set TCP_NODELAY too.
sub post_accept {
    my ($self, $client) = @_;
    $client ||= $self->{server}->{client};
    setsockopt($client, IPPROTO_TCP, TCP_NODELAY, 1)
        or $self->log(1, "TCP_NODELAY: $!");
    return $self->SUPER::post_accept($client);
}

sub process_request {
    my $self = shift;
    while (defined(my $line = <STDIN>)) {
        $line =~ s/\r?\n\z//;
        print "You said '$line'\r\n";
        last if index($line, 'quit') >= 0;
    }
}

__PACKAGE__->run;
