#!/usr/bin/perl
# The line-echo benchmark protocol on Perl's Net::Server::PreFork: each line
# L is answered "You said 'L'\r\n"; after a line containing "quit", or at
# end of input, the connection closes.
#
#   perl bench/perl/prefork.pl --port 127.0.0.1:0
#   perl bench/perl/prefork.pl --port '/tmp/echo.sock|unix'
#
# Net::Server logs "Binding to TCP port 0 ..." for port 0; once bound, this
# logs "Bound to TCP port N on host H" with the port the kernel chose. On a
# unix socket Net::Server logs "Binding to UNIX socket file "PATH"".
package BenchPreFork;

use strict;
use warnings;
use base qw(Net::Server::PreFork);

sub post_bind_hook {
    my $self = shift;
    for my $sock (grep { $_->NS_proto eq 'TCP' } @{ $self->{server}->{sock} }) {
        $self->log(0, sprintf('Bound to TCP port %d on host %s', $sock->sockport, $sock->sockhost));
    }
}

sub process_request {
    my $self = shift;
    binmode STDIN;
    binmode STDOUT;
    STDOUT->autoflush(1);
    while (defined(my $line = <STDIN>)) {
        $line =~ s/\r?\n\z//;
        print "You said '$line'\r\n";
        last if index($line, 'quit') >= 0;
    }
}

__PACKAGE__->run;
