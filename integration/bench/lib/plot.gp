# plot.gp — CPU per call and calls completed against the offered rate, Kamailio and sipdispatch,
# from summary.py's step data. gnuplot -e "dir='OUT'; s='stateful'; out='x.png'" plot.gp
set terminal pngcairo size 1100,420 font ",10"
set output out
set multiplot layout 1,2 title sprintf("%s: Kamailio 5.6 vs sipdispatch (SIPp, one 2-core VM)", s)
set key top left
set grid
set xlabel "offered calls/s"
set ylabel "proxy CPU µs per call"
set yrange [0:*]
plot dir."/".s."-kamailio.dat" using 1:2 with linespoints title "Kamailio 5.6", \
     dir."/".s."-sipdispatch.dat" using 1:2 with linespoints title "sipdispatch"
set ylabel "calls completed (%)"
set yrange [0:105]
set key bottom left
plot dir."/".s."-kamailio.dat" using 1:3 with linespoints title "Kamailio 5.6", \
     dir."/".s."-sipdispatch.dat" using 1:3 with linespoints title "sipdispatch"
unset multiplot
