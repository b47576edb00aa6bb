// An npipes echo server in C#, from docs/protocol.md (frame format v1); the frame code is
// in ../Shared/Npipes.cs.
//
//   NpipesServer [--no-crc] NAME
//       creates the pipe, prints "ready", serves one client: sends each message back as
//       it came (text as text, binary as binary), with a CRC-32 and requiring one
//       (npipes' crc=True) unless --no-crc; exits when the client closes.
//
// NAME: the .NET pipe name ("demo"; \\.\pipe\demo on Windows). On Linux/macOS .NET
// makes it the socket $TMPDIR/CoreFxPipe_demo: the npipes side uses dotnet=True.
using System;
using System.IO;
using System.Collections.Generic;

static class Program
{
    static int Main(string[] argv)
    {
        var args = new List<string>(argv);
        bool crc = !args.Remove("--no-crc");
        if (args.Count != 1)
        {
            Console.Error.WriteLine("usage: NpipesServer [--no-crc] NAME");
            return 2;
        }
        try
        {
            using (var pipe = Pipes.Listen(args[0]))
            using (var stdout = Console.OpenStandardOutput())
            {
                Pipes.PrintLine(stdout, "ready"); // the pipe exists from here on
                pipe.WaitForConnection();
                int count = 0;
                while (true)
                {
                    object message;
                    try
                    {
                        message = NpFrame.Receive(pipe, crc);
                    }
                    catch (NpipesException e) when (!e.Fatal) // e.g. a bad CRC: the next frame is fine
                    {
                        Console.Error.WriteLine("NpipesServer: " + e.Message);
                        continue;
                    }
                    catch (NpipesException e) when (e.Message.StartsWith("ConnectionClosedError"))
                    {
                        break;
                    }
                    NpFrame.Send(pipe, message, crc);
                    count++;
                }
                Pipes.PrintLine(stdout, "echoed " + count);
                return 0;
            }
        }
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException || e is ArgumentException)
        {
            Console.Error.WriteLine("NpipesServer: " + e.Message);
            return 1;
        }
    }
}
